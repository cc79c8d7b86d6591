"""`run_multitask.py`: MTST's training command (`mtst-train`) as a script in a checkout.

    accelerate launch run_multitask.py --tasks_config data/tasks/default.yaml --output_dir outputs/mtst-default
    python run_multitask.py --help

The code is `mtst/cli/train.py`. Imported (`import run_multitask`), this module is that module, so
`run_multitask.main([...])` and `run_multitask.run(...)` keep working.
"""

import sys

from mtst.cli import train as _train

if __name__ == "__main__":
    sys.exit(_train.main())
sys.modules[__name__] = _train
