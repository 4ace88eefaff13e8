from icepick.cli import main

raise SystemExit(main())
