"""Pipeline stages. Each takes the resolved config and a run directory, reads the files of the stage before
and writes its own (see ``docs/architecture.md``): pretrain -> export -> cluster -> evaluate -> report."""
