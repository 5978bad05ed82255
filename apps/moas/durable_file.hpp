// Files that a kill or a power cut at any moment leaves either as they were or as they were meant to be: the new
// contents go to a temporary file beside the target and reach the disk (fsync) before a rename puts them in place,
// and the directory is synced so that the rename itself survives a power cut.
#pragma once

#include <string>

namespace moas_cli {

// The directory that holds path ("." for a bare file name).
std::string parent_directory(const std::string &path);

// Makes the file's contents durable; RuntimeFailure naming it on any error.
void sync_file(const std::string &path);

// Makes dir's entries durable: the files created, renamed, linked or removed in it.
void sync_directory(const std::string &dir);

// Writes all of text to fd (the file at path); RuntimeFailure naming path on any error (a full disk included).
void write_all(int fd, const std::string &text, const std::string &path);

// Replaces the file at path with contents through path + ".tmp": a kill leaves the old file whole, and at most that
// one temporary file, which the next call overwrites.
void replace_file(const std::string &path, const std::string &contents);

}  // namespace moas_cli
