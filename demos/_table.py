"""Plain-text tables for the demos."""


def print_table(header, rows):
    """Print ``rows`` (tuples of str) under ``header`` with columns padded to their widest cell."""
    widths = [max(len(header[i]), *(len(r[i]) for r in rows)) for i in range(len(header))]
    for i, cells in enumerate([header, *rows]):
        print(" | ".join(c.ljust(w) for c, w in zip(cells, widths)).rstrip())
        if i == 0:
            print("-+-".join("-" * w for w in widths))
