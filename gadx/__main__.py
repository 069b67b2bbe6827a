from gadx.cli import main

raise SystemExit(main())
