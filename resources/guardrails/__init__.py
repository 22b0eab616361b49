"""The guardrails library: prompt-injection screening and data blocks for untrusted text,
the rules every model answer is held to, and the rules a support reply must pass before a
person or a policy can approve it."""
