"""The curator: read a data drop, check its shape, remove near-duplicates (SemDeDup), split and decontaminate it.

No Dagster here: `curate` (the stage's entry point, settings from the manifest) is called by the `curated_dataset`
asset, `curate_drop` (one file, explicit settings) by `foundry curate` and by `curate` itself."""

from foundry_assets.curator.cache import EmbeddingCache, embed_texts
from foundry_assets.curator.contamination import content_text
from foundry_assets.curator.decontam import OverlapReport, ngram_overlap, normalize_words
from foundry_assets.curator.embed import MiniLMEmbedder
from foundry_assets.curator.formats import (
    DataFormat,
    Record,
    RecordShape,
    conversation,
    detect_shape,
    split_train_test,
    text_for_embedding,
    to_training_example,
)
from foundry_assets.curator.greedy import RemovedItem
from foundry_assets.curator.pipeline import CurationResult, curate_drop
from foundry_assets.curator.readers import Quarantined, ReadResult, read_drop, read_jsonl
from foundry_assets.curator.semdedup import DedupResult, KeepPolicy, exact_semdedup, semdedup
from foundry_assets.curator.stage import curate

__all__ = [
    "CurationResult",
    "DataFormat",
    "DedupResult",
    "EmbeddingCache",
    "KeepPolicy",
    "MiniLMEmbedder",
    "OverlapReport",
    "Quarantined",
    "ReadResult",
    "Record",
    "RecordShape",
    "RemovedItem",
    "content_text",
    "conversation",
    "curate",
    "curate_drop",
    "detect_shape",
    "embed_texts",
    "exact_semdedup",
    "ngram_overlap",
    "normalize_words",
    "read_drop",
    "read_jsonl",
    "semdedup",
    "split_train_test",
    "text_for_embedding",
    "to_training_example",
]
