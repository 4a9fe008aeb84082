"""Optional integrations with outside tools, each imported lazily and only by the code that uses it."""
