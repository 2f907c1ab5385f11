"""Ship and deploy: strategies + rollback (controller) above a small backend interface, with a local
(Docker + HAProxy) and an ECS backend, deployment records in S3, and the deploy DAG's steps (flow)."""
