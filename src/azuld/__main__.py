from azuld.cli import main

raise SystemExit(main())
