"""Running the pipeline's orchestration locally (`make ui`, `make stop`)."""
