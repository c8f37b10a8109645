#!/usr/bin/env python3
"""Generate tools/typedefs.list for tools/pgindent.sh: every typedef name in the
PostgreSQL server headers, librdkafka's headers and our own sources."""
import glob
import re

files = (glob.glob('/usr/include/postgresql/15/server/**/*.h', recursive=True) +
         glob.glob('/usr/include/librdkafka/*.h') + glob.glob('src/*.[ch]') + glob.glob('test/*.c'))
names = {'FILE', 'size_t', 'ssize_t', 'pid_t', 'off_t', 'va_list', 'socklen_t', 'sigjmp_buf',
         'pthread_t', 'pthread_mutex_t', 'pthread_cond_t', 'sig_atomic_t', 'time_t', 'uint8_t',
         'uint16_t', 'uint32_t', 'uint64_t', 'int8_t', 'int16_t', 'int32_t', 'int64_t'}
for f in files:
    in_typedef = False
    for line in open(f, errors='ignore'):
        s = line.strip()
        m = re.match(r'typedef\b.*\(\s*\*\s*(\w+)\s*\)', s)
        if m:
            names.add(m.group(1))
            continue
        if s.startswith('typedef') and s.endswith(';') and '{' not in s:
            m = re.search(r'(\w+)\s*(\[[^\]]*\])?\s*;$', s)
            if m:
                names.add(m.group(1))
            continue
        if s.startswith('typedef'):
            in_typedef = True
        if in_typedef:
            m = re.match(r'\}\s*(\w+)\s*;', s)
            if m:
                names.add(m.group(1))
                in_typedef = False
# names that the headers use as struct members after a nested typedef, and
# that we use as variables
names -= {'data', 'values', 'd', 'next', 'pos', 'args', 'key', 'keys', 'nulls', 'result', 'state', 'len', 'buf'}
with open('tools/typedefs.list', 'w') as out:
    out.write('\n'.join(sorted(names)) + '\n')
print(len(names), 'typedefs')
