//! KafkaSend on Clustera.
