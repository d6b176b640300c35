# cmake -DINPUT=file -DOUTPUT=file.c -DNAME=symbol -P embed.cmake
# Writes a C file defining `const unsigned char NAME[]` (the input's bytes plus a NUL) and
# `const unsigned long NAME_len` (the byte count without the NUL), so a page ships inside the binary.
file(READ ${INPUT} hex HEX)
string(LENGTH "${hex}" n)
math(EXPR len "${n} / 2")
string(REGEX REPLACE "([0-9a-f][0-9a-f])" "0x\\1," body "${hex}")
string(REGEX REPLACE "((0x[0-9a-f][0-9a-f],){24})" "\\1\n" body "${body}")
file(WRITE ${OUTPUT} "/* Generated from ${INPUT} at build time; do not edit. */\nconst unsigned char ${NAME}[] = {\n${body}0x00};\nconst unsigned long ${NAME}_len = ${len};\n")
