#!/bin/bash
# One-shot GPU check (run on a CUDA machine from the repository root, OUT=<folder for results>;
# the wheel folder .whl/ holds mlxtend when the machine cannot reach PyPI): CUDA tests, throughput vs HF on CUDA, the main job on CUDA (5 seeds), label efficiency on Fashion-MNIST.
export PYTHONUNBUFFERED=1
[ -d .whl ] && { python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl || exit 1; }
OUT=${OUT:-gpu_out}; mkdir -p $OUT
export PYTHONPATH=$PWD/src:/tmp/site
T0=$(date +%s)
el() { echo "[t=$(( $(date +%s) - T0 ))s] $*"; }
el start; nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -c "import torch, mnist_ssl, mlxtend; print('torch', torch.__version__, torch.cuda.get_device_name(0))"
el tests
timeout 90 python3 -m pytest -q -m cuda tests -p no:cacheprovider 2>&1 | tail -n 15 | tee $OUT/cuda_tests.txt
el throughput
timeout 100 python3 benchmarks/bench_throughput.py --device cuda --rounds 3 --steps 20 --warmup 5 --batch 256 --out throughput_cuda_h100 > $OUT/throughput_cuda.txt 2>&1; tail -n 20 $OUT/throughput_cuda.txt
cp benchmarks/results/throughput_cuda_h100*.json $OUT/ 2>/dev/null
el reproduce
timeout 200 python3 -m mnist_ssl reproduce --device cuda --seeds 5 --jobs 5 --out /tmp/rep5 -q > $OUT/reproduce_cuda.txt 2> $OUT/reproduce_cuda_time.txt; tail -n 14 $OUT/reproduce_cuda.txt
cp /tmp/rep5/metrics.json $OUT/reproduce_cuda_metrics.json 2>/dev/null
el label-efficiency
timeout 100 python3 -m mnist_ssl label-efficiency --device cuda --data ${FASHION:-/usr/share/datasets/fashion-mnist} --dataset fashion-mnist --methods supervised,mae --labels 1,10,100 --seeds 2,2,1 --finetune-steps 500 --set pretrain.epochs=10 --set pretrain.batch_size=128 --out /tmp/lef -q > $OUT/le_fashion.txt 2>&1; tail -n 20 $OUT/le_fashion.txt
cp /tmp/lef/results.json $OUT/le_fashion_results.json 2>/dev/null
el done
