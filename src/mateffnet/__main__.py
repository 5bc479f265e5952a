from mateffnet.cli import main

raise SystemExit(main())
