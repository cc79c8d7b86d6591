"""The model card and the Hub: the card data and rendering (`card`), the callback that fills it during training
(`callback`), and what a Hub repository gets from a saved folder (`publish`)."""
