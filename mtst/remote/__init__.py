"""The files that travel with the weights: `configuration_mtst.py`, `heads_mtst.py`, `modeling_mtst.py`,
`pipeline_mtst.py` and `handler.py`.

Every saved model holds copies of them under these names (its `config.json`'s `auto_map` and `custom_pipelines` name
them), and `trust_remote_code=True` loads them on the user's transformers. So they import only torch, numpy,
transformers and each other (relative imports, with the top-level fallback for copies imported outside a package),
never the rest of `mtst`. The checkout's top-level `configuration_mtst.py` and `modeling_mtst.py` are these modules
under their design-card names.
"""
