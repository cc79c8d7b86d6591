"""run_multitask.py as it is, plus one line per rank after training with a digest of that rank's weights:
`[mtst-weights] rank=R sha256=HEX`. The multi-machine test launches this instead of run_multitask.py to compare the
ranks' final weights, since only the main process saves the model."""

import hashlib
import os
import runpy
import sys

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from mtst.training import trainer as trainer_mtst  # noqa: E402


def weights_digest(model) -> str:
    """sha256 over the model's state dict (names, dtypes, shapes and bytes), in name order."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        tensor = tensor.detach().cpu().contiguous()
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
        digest.update(tensor.view(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


_train = trainer_mtst.MultiTaskTrainer.train


def train(self, *args, **kwargs):
    output = _train(self, *args, **kwargs)
    print(f"[mtst-weights] rank={self.args.process_index} sha256={weights_digest(self.model)}", flush=True)
    return output


if __name__ == "__main__":
    trainer_mtst.MultiTaskTrainer.train = train
    sys.argv[0] = os.path.join(ROOT, "run_multitask.py")
    runpy.run_path(sys.argv[0], run_name="__main__")
