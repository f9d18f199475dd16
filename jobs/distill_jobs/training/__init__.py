"""Student training for the Iterate stage: data, students, DeepSpeed under Ray Train,
the distillation loss, and the measurements that decide which student is kept."""
