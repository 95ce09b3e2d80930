"""The book: its stages as single calls, tables and figures composed from the layers below, the
ablations, and the pipeline that executes the notebooks and builds the book.
"""
