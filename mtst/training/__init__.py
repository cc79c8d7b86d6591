"""Multi-task training: the arguments (`arguments`), the task-aware batch sampler (`sampler`), the Trainer
(`trainer`), freezing and learning-rate groups (`freezing`), loss weighting and gradient surgery (`weighting`),
checkpoint checks (`checkpoints`), distillation from single-task teachers (`distill`) and adding tasks to a trained
model (`grow`)."""
