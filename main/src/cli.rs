//! Command-line types. (Contract; being filled in.)
