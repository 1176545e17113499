#!/bin/bash
# One-shot GPU check, run from the repository root on a CUDA machine (OUT=<folder for results>):
#   1. throughput of every objective beside the HF peers, alone on the GPU;
#   2. label efficiency on Fashion-MNIST (60,000 unlabelled images), one process per method, side by
#      side on the GPU (a batch-8 fine-tuning step is bound by kernel launches, not by the GPU);
#   3. the CUDA-marked tests, beside 2.
# Offline machines: .whl/ holds the wheels it needs (mlxtend, transformers and their dependencies;
# installed without an index), FASHION the IDX folder. SMOKE=1 DEVICE=cpu shrinks every part to
# seconds, to check the script itself on a CPU before spending device time.
export PYTHONUNBUFFERED=1
OUT=${OUT:-gpu_out}; mkdir -p "$OUT"
DEVICE=${DEVICE:-cuda}
FASHION=${FASHION:-/usr/share/datasets/fashion-mnist}
install() { python3 -m pip install -q --no-index --find-links .whl --no-compile --no-cache-dir "$@"; }
if [ -d .whl ] && ! python3 -c "import transformers, mlxtend" 2>/dev/null; then
  # Into the interpreter's own site (keeps its numpy and torch); a private folder if that is refused.
  { install --no-deps mlxtend && install transformers; } 2>/dev/null \
    || { install --break-system-packages --no-deps mlxtend && install --break-system-packages transformers; } 2>/dev/null \
    || install --no-deps --target /tmp/site .whl/*.whl
fi
export PYTHONPATH=$PWD/src:/tmp/site
T0=$(date +%s)
el() { echo "[t=$(( $(date +%s) - T0 ))s] $*"; }
if [ "${SMOKE:-0}" = 1 ]; then
  TP="--rounds 1 --steps 2 --warmup 1 --batch 16 --objectives mae-drop,videomae --sizes default"; TP_LIMIT=120
  LE="--labels 1,10 --seeds 1,1 --finetune-steps 5 --set pretrain.epochs=1 --test-per-class 10"; LE_LIMIT=300
  TESTS="tests/test_cli.py -k help"
else
  TP="--rounds 3 --steps 20 --warmup 5 --batch 256"; TP_LIMIT=110
  LE="--labels 1,10,100 --seeds 3,3,1 --finetune-steps 1000 --set pretrain.epochs=15 --test-per-class all"; LE_LIMIT=330
  TESTS="-m cuda tests"
fi
el start; nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null
python3 -c "import torch, transformers, mlxtend, mnist_ssl; print('torch', torch.__version__, 'transformers', transformers.__version__, torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'no cuda')"

el throughput
timeout $TP_LIMIT python3 benchmarks/bench_throughput.py --device "$DEVICE" $TP --out "throughput_gpu_check" \
  > "$OUT/throughput.txt" 2>&1; echo "rc $?" >> "$OUT/throughput.txt"; tail -n 16 "$OUT/throughput.txt"
cp benchmarks/results/throughput_gpu_check.* "$OUT/" 2>/dev/null

el label-efficiency and tests
for m in supervised mae infonce mae-infonce videomae; do
  timeout $LE_LIMIT python3 -m mnist_ssl label-efficiency --device "$DEVICE" --data "$FASHION" --dataset fashion-mnist \
    --methods $m $LE --set pretrain.batch_size=256 --out "$OUT/le_$m" -q > "$OUT/le_$m.txt" 2>&1 &
done
timeout $LE_LIMIT python3 -m pytest -q $TESTS -p no:cacheprovider > "$OUT/cuda_tests.txt" 2>&1 &
wait
tail -n 5 "$OUT/cuda_tests.txt"
for m in supervised mae infonce mae-infonce videomae; do echo "== $m"; tail -n 8 "$OUT/le_$m.txt"; done
rm -f "$OUT"/le_*/pretrained/*.tmp* 2>/dev/null
el done
