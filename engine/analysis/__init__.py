"""Analysis features over a library's stored vectors: zero-shot tags, outliers, opinion scores."""
