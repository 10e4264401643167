from nameserver.cli import main

raise SystemExit(main())
