"""Knowledge transferred from teacher to student: pure loss functions (``functional``)."""
