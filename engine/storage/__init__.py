"""The library on disk: manifest, Arrow shards, the one writer, the FAISS index, repair."""
