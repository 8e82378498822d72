"""Live progress: the handler's context (progress, cancel, per-item failures), the frames listeners receive, and the
channel layer they travel on."""
