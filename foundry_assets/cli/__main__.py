"""`python -m foundry_assets.cli …` runs the `foundry` command."""

import sys

from foundry_assets.cli import main

sys.exit(main())
