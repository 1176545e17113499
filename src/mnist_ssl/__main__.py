from mnist_ssl.cli import main

raise SystemExit(main())
