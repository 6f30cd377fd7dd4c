"""memogrid's service: the memoizing search engine and what serves it.

Layers, each a subpackage: ``engine`` (keys, graph building, fold work;
imports nothing from HTTP or SQL) and ``store`` (content-addressed datasets
and the persistent result cache).
"""
