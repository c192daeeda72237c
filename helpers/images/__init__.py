"""Images and concepts: the datasets behind one interface (Fashion-MNIST, image folders), the single
batch feeder, and the concept masks of 08 (Broden, the Fashion-MNIST annotator)."""
from .batches import Batches
from .common import BadImageError, example, images_key, select
from .concepts import Broden, BrodenImages, Concepts, FashionConcepts
from .fashion import FASHION_CLASSES, ArrayImages, fashion_mnist, find_fashion_mnist, read_idx
from .folders import CHANNELS, FolderImages, image_folder

__all__ = ["Batches", "BadImageError", "example", "images_key", "select", "Broden", "BrodenImages", "Concepts",
           "FashionConcepts", "FASHION_CLASSES", "ArrayImages", "fashion_mnist", "find_fashion_mnist", "read_idx",
           "CHANNELS", "FolderImages", "image_folder"]
