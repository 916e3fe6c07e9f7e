import sys

from rhapsody.cli import main

sys.exit(main())
