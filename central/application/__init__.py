"""The central's application layer: use cases over the pure domain, one unit of work per change."""
