"""The KEDA side: the numbers KEDA scales by.

- `scaler`: the external scaler servicer; `autoscaler`: KEDA's part for the local provider
- `peers`: several zerohop replicas answering KEDA as one
"""
