"""The support library: the support desk (help centre, customers, orders), the tools an
agent may call and their MCP server, per-customer memory, exactly-once delivery, routing
by labelled examples, the reply loops (refinement, multi-part answers, the rubric judge)
and the triage prompts they share with the triage pipeline's assets."""
