"""The commands: `mtst-train` (`train`, also `run_multitask.py` in a checkout), `mtst-predict` (`predict`),
`mtst-export` (`export`) and `mtst-label` (`label`)."""
