"""`python -m simulator --demo`: a foreground simulator with demo keys (prints the env exports)."""

from simulator.server import main

raise SystemExit(main())
