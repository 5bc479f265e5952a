"""`python -m mateffnet.experiments [FOLDER]` writes the run configs of the paper and of the temporal-order ablation (default configs/).

The runs themselves live in `mateffnet.engine.experiments`; this module is the documented entry point.
"""

from mateffnet.engine.experiments import main

if __name__ == "__main__":
    main()
