"""Infrastructure: configs and profiles (``config``), the registry of artefact kinds and their keys
(``artefacts``), the store (``store``), threads and progress (``runtime``), tables and figures with
provenance (``report``), the notebooks runner (``reproduce``), filling the cache side by side
(``prefill``), golden fingerprints (``golden``), the command line (``cli``, ``pipeline``)."""
