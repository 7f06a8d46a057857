"""The field-mapper as a contract-v1 component (world ``translator``): the same logic, records
lowered one by one by the canonical ABI. Kept to compare both contracts; new translators use v2
(``app.py``).
"""

from componentize_py_types import Err
from field_mapper import FieldMapper, MappingError
from tributary_translator import describe
from wit_world import Outcome_Err, Outcome_Ok, OutputRecord

# componentize-py may create a WitWorld object per call: the instance's state is module-level.
_mapper = None
_failure = "init was not called"


class WitWorld:
    def init(self, config: str) -> None:
        global _mapper, _failure
        _mapper, _failure = None, "init was not called"
        try:
            mapper = FieldMapper(config)
        except ValueError as error:
            message = str(error)
        except Exception as error:
            message = describe(error)
        else:
            _mapper, _failure = mapper, None
            return
        _failure = f"init failed: {message}"
        raise Err(message)

    def translate(self, batch: list) -> list:
        mapper = _mapper
        if mapper is None:
            raise Err(_failure)
        outcomes = []
        for record in batch:
            value = record.value
            try:
                if value is not None:
                    value = mapper.map_value(value)
                outcomes.append(Outcome_Ok([OutputRecord(mapper.map_key(record.key), value, record.headers)]))
            except MappingError as error:
                outcomes.append(Outcome_Err(str(error)))
            except Exception as error:  # as the SDK does: an unexpected error is the record's
                outcomes.append(Outcome_Err(describe(error)))
        return outcomes
