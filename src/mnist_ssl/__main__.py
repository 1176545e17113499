from mnist_ssl.cli import console_main

raise SystemExit(console_main())
