"""The query path: the Library facade, candidate generation, the int8 scan, fusion, long text, filters."""
