"""Text without TensorFlow: words and idf (`tokens`), word-vector files
(`vectors`). What the data pipeline, the overlap baseline and the config's
--embeddings check share."""
