"""The field-mapper as a contract-v2 component (``batch-translator``), through the SDK."""

from field_mapper import FieldMapper
from tributary_translator import batch_class

Batch = batch_class(FieldMapper)
