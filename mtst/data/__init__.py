"""Task data: task specs from task configs (`tasks`), reading and validating files and Hub datasets (`loading`),
tokenization with sub-word label alignment (`tasks`), and the task-aware dataset and collator (`collator`)."""
