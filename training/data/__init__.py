"""Trainer data side: streaming shards -> decoded samples -> shot-stratified curriculum.

Modules: config (DataConfig), shards (discovery, index, row-group reads), sampler (partitioned
pool cursors), curriculum (stage pools), decode (frames/features of one sample), dataset
(ShardStream, ShardLoader), datamodule (Lightning), audio_features (Wav2Vec2 in the loader),
cli (`mocha data inspect`).
"""
