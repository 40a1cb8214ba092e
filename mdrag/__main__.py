from mdrag.cli import main

raise SystemExit(main())
