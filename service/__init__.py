"""The service core shared by the API and the workers: settings, database, jobs, storage, keys,
quotas, retention, recovery, webhooks and logs. It imports no fit code: model.fit stays in worker/."""
