"""Deep hashing models: HashNet training and the encoder that turns images into packed binary codes.

The service imports `model.encoder.Encoder`; see model/README.md for the modules.
"""
