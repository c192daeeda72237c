"""Step 3 of the method: the index of patch activations (:mod:`.index`) and nearest-neighbour search
(:mod:`.knn`: FAISS, on a GPU when faiss has one, or an exact kNN in torch)."""
from .index import MADE_BY, choose_positions, index_activations, index_key, index_rank, load_index, make_index
from .knn import TorchFlat, as_float32, new_index, search, to_device

__all__ = ["MADE_BY", "TorchFlat", "as_float32", "choose_positions", "index_activations", "index_key", "index_rank",
           "load_index", "make_index", "new_index", "search", "to_device"]
