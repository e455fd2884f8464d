"""Shared descriptor and detector losses: pure ``keras.ops`` functions, one module per family.

``structured``: TFMatch structured losses over a batch of corresponding descriptors (GeoDesc, ContextDesc).
``contrastive``: dense-correspondence losses of ASLFeat (hardest-contrastive, circle).
"""
