"""Step 2 of the method: bases of a layer's activation space, ordered by importance.

Every kind follows scikit-learn's estimator API (``fit``, ``partial_fit``, ``transform``,
``inverse_transform``, learned attributes ending in ``_``): ``pca`` (PCA and the neuron basis, on the
streamed moments of ``moments``), ``ica``, ``nmf``, ``sae`` (a TopK sparse autoencoder), ``rotation`` (the
random orthonormal baseline). ``_base`` holds
what they share; ``kinds`` describes each kind once (:data:`KINDS`); ``fit`` fits a profile's bases layer by
layer; ``curves`` computes the explained-variance curves and counts of Fig. 5.
"""
from .curves import counts, curve_counts, explained_curve
from .fit import (bases_key, explained_variance_table, fit_bases, fit_layer_bases, layer_bases, learned_settings,
                  load_basis, make_bases)
from .ica import ICABasis
from .kinds import KINDS, Kind
from .moments import NotFittedError, StreamingMoments
from .nmf import NMFBasis
from .pca import NeuronBasis, PCABasis
from .rotation import RandomBasis
from .sae import SAEBasis

__all__ = ["counts", "curve_counts", "explained_curve", "bases_key", "explained_variance_table", "fit_bases",
           "fit_layer_bases", "layer_bases", "learned_settings", "make_bases", "load_basis", "ICABasis", "KINDS", "Kind",
           "NotFittedError", "StreamingMoments", "NMFBasis", "NeuronBasis", "PCABasis", "RandomBasis", "SAEBasis"]
