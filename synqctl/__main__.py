"""`python -m synqctl …`"""

from synqctl.cli import main

raise SystemExit(main())
