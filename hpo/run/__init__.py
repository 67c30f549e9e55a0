"""The driver side: checks before a study is written, the study driver and its recorder, trial
backends (local processes, Ray), the serve loop, and the Ray runtime hpo starts or joins."""
