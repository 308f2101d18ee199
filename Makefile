# Stable Diffusion in the browser: the build graph.
#
#   make sd15|sdxl WEIGHTS=tiny|random|/path/to/diffusers-folder   build a variant into artifacts/<variant>/
#   make sd15 sdxl WEIGHTS=tiny                                    both families, side by side
#   make reference ... / make test / make demo                     see `make help`
#
# Reading guide: family (MODELS, from the table in stages/lib/models.py) -> submodule (SUBS_<family>) -> library
# (LIBRARIES_<family>: per compute dtype) -> stage (one script in stages/, one rule below) -> file.
# Every file of a variant lives at artifacts/<variant>/<library>/<stage output>.v<version>.<ext>.
# A stage rewrites its output only when the bytes change and records each run in a hidden stamp beside it
# (GCC's move-if-change + stamp idiom): make compares the stamp, dependents compare the output, so a
# rebuild that changes nothing stops there.

SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
# A failed recipe must not leave a target that looks finished.
.DELETE_ON_ERROR:
.SUFFIXES:
.SECONDEXPANSION:
# Every file here costs seconds to hours to make: never delete one as an "intermediate" (GNU make would
# delete files reached only through chained pattern rules; .NOTINTERMEDIATE needs make 4.4).
.SECONDARY:
MAKEFLAGS += --warn-undefined-variables --no-builtin-rules
# Parallel by default: independent stages (submodules, targets, the runtime) build side by side, and every
# output goes through an atomic rename, so a parallel or interrupted build is as safe as a serial one. A -j on
# the command line wins (make -j1 for a serial build). JOBS=1 too. Only the top-level make sets it: a sub-make
# shares its parent's job slots (a recipe that runs make through a variable marks the line with +).
JOBS ?= $(shell nproc 2>/dev/null || echo 2)
ifeq ($(MAKELEVEL),0)
  MAKEFLAGS += -j$(JOBS)
endif

# ---- what to build ------------------------------------------------------------------------------------
# The family table is stages/lib/models.py; make reads it as variables (per family: SUBS_, WEIGHTED_, LIBRARIES_,
# WASM_, TOKENIZERS_, SCHEDULER_FILES_, FOLDER_<family>_<submodule>, FOLDERS_), regenerated when it changes.
MODEL_TABLE := build/model-table.mk
include $(MODEL_TABLE)
$(MODEL_TABLE): stages/model_table.py stages/lib/models.py stages/lib/schedulers.py
	$(Q)python3 stages/model_table.py --out $@

# Several families build in one call (make sd15 sdxl WEIGHTS=tiny); MODEL picks the one for generate, reference
# and tune (default: the first family named on the command line, else sd15).
MODEL     ?= $(or $(firstword $(filter $(MODELS),$(MAKECMDGOALS))),sd15)
BUILD_MODELS := $(or $(filter $(MODELS),$(MAKECMDGOALS)),$(MODEL))
WEIGHTS   ?=
VARIANT   ?=
ARTIFACTS ?= artifacts
TUNING    ?= artifacts/tuning
PY        ?= .venv/bin/python
# How float32 weights are stored in the shards: float16 (half the download; the libraries still compute in
# float32) or float32.
PARAM_STORAGE ?= float16
# What export-lib compiles: webgpu (the page's libraries) and/or cpu (the same modules as shared libraries, for
# the parity tests and stages/lib/cpu_pipeline.py; minutes of LLVM that the page never loads).
TARGETS   ?= webgpu
# 3x3 convolutions as Winograd GEMMs (1, faster) or direct (0: the transformed weights that stay on the GPU
# are 1.8-4x the conv weights; full-size SD 1.5 peaks at 10.7 GB of GPU memory with them, 7.2 without).
WINOGRAD  ?= 1
V         ?= 0

# A variant is one family built from one set of weights: artifacts/<variant>/, named <family>-tiny,
# <family>-random or <family> (a real folder; VARIANT= names it otherwise). Its family is the name up to the
# first '-' (stages/lib/cli.py reads it the same way).
ifneq ($(VARIANT),)
  ifneq ($(words $(BUILD_MODELS)),1)
    $(error VARIANT=$(VARIANT) names one variant, but $(BUILD_MODELS) are being built; build one family at a time with VARIANT)
  endif
endif
variant_name = $(or $(VARIANT),$1$(if $(filter tiny random,$(WEIGHTS)),-$(WEIGHTS)))
$(foreach m,$(BUILD_MODELS),$(eval VARIANT_$m := $(call variant_name,$m)))
VARIANTS := $(foreach m,$(BUILD_MODELS),$(VARIANT_$m))
# Where each variant's weights are read: generated ones inside the variant, a real folder where it is.
$(foreach v,$(VARIANTS),$(eval SRC_$v := $(if $(filter tiny random,$(WEIGHTS)),$(ARTIFACTS)/$v/weights,$(WEIGHTS))))
$(foreach v,$(VARIANTS),$(eval GENERATED_$v := $(if $(filter tiny random,$(WEIGHTS)),$(ARTIFACTS)/$v/weights/.stamp)))

# Per-variant rules below match artifacts/<variant>/..., per-library ones artifacts/<variant>/<library>/...; these
# read a stem ($*) of either kind. A library is a submodule compiled for one compute dtype: unet (float32) and
# unet-f16 share the traced module and the weights, and each has its own lowered, scheduled and compiled files
# and tuning log.
variant_of   = $(firstword $(subst /, ,$1))
library_of   = $(notdir $1)
family_of    = $(firstword $(subst -, ,$(call variant_of,$1)))
submodule_of = $(patsubst %-f16,%,$(call library_of,$1))
is_float16   = $(filter %-f16,$(call library_of,$1))
src_of       = $(SRC_$(call variant_of,$1))
generated_of = $(GENERATED_$(call variant_of,$1))
config_of    = $(call src_of,$1)/$(FOLDER_$(call family_of,$1)_$(call submodule_of,$1))/config.json
RUNTIME := $(ARTIFACTS)/tvm-runtime/0.27.0.post1

ifeq ($(V),1)
  Q :=
else
  Q := @
endif
# One short line per stage run (`STAGE artifacts/sd15-tiny/unet`); V=1 shows the full commands.
say = @printf '  %-14s %s\n' '$1' '$2'

# ---- a variant's files ----------------------------------------------------------------------------------
LIB_FILE_webgpu := lib.webgpu.v1.tar
LIB_FILE_cpu    := lib.cpu.v1.so
$(foreach t,$(TARGETS),$(if $(filter webgpu cpu,$(t)),,$(error TARGETS=$(TARGETS): $(t) is not a target; give webgpu and/or cpu)))
# $(call outputs,VARIANT): every file `make <family>` makes for it, model.json last.
libraries_of    = $(LIBRARIES_$(call family_of,$1))
lib_files       = $(foreach l,$(call libraries_of,$1),$(foreach t,$(TARGETS),$(ARTIFACTS)/$1/$l/$(LIB_FILE_$t)))
param_files     = $(foreach s,$(WEIGHTED_$(call family_of,$1)),$(ARTIFACTS)/$1/$s/params.v1/tensor-cache.json)
scheduler_files = $(addprefix $(ARTIFACTS)/$1/scheduler.v1/,$(SCHEDULER_FILES_$(call family_of,$1)))
tokenizer_files = $(foreach t,$(TOKENIZERS_$(call family_of,$1)),$(ARTIFACTS)/$1/tokenizer.v1/$t/tokenizer.json)
wasm_file       = $(ARTIFACTS)/$1/$(WASM_$(call family_of,$1))
# a float16 library's tensor-core kernels (stages/lib/subgroup_matrix.py), written by its WebGPU export-lib
sgm_files       = $(if $(filter webgpu,$(TARGETS)),$(foreach l,$(filter %-f16,$(call libraries_of,$1)),$(ARTIFACTS)/$1/$l/subgroup-matrix.v1.json))
manifested      = $(call lib_files,$1) $(call sgm_files,$1) $(call param_files,$1) $(call scheduler_files,$1) $(call tokenizer_files,$1) \
                  $(call wasm_file,$1)
outputs         = $(call manifested,$1) $(ARTIFACTS)/$1/model.json
# What `make <family>` builds in this call (nothing for a family not being built).
$(foreach m,$(MODELS),$(eval OUTPUTS_$m := $(if $(filter $m,$(BUILD_MODELS)),$(call outputs,$(VARIANT_$m)))))

.PHONY: help setup $(MODELS) reference generate test clean FORCE
help:
	@sed -n '3,5p' Makefile; echo; grep -E '^[a-zA-Z0-9 ()$$_-]+:.*## ' Makefile | sed 's/:.*## /\t/; s/^$$(MODELS)/$(MODELS)/'

# make sd15, make sdxl: every output of the family's variant; make sd15 sdxl builds both, side by side.
# Under make -n (stages printed, not run) or -q (nothing run) the goal's own line must not claim "up to date",
# and, marked +, it does not count as work to do (RESTAT below keeps what -n lists and -q counts true).
SHORT_FLAGS := $(filter-out --%,$(firstword $(MAKEFLAGS)))
DRY_RUN     := $(findstring n,$(SHORT_FLAGS))$(findstring q,$(SHORT_FLAGS))
$(MODELS): %: $$(OUTPUTS_$$*) ## build a family: WEIGHTS=tiny|random|<diffusers folder> [VARIANT=name] [PARAM_STORAGE=float32] [WINOGRAD=0] [TARGETS="webgpu cpu"]
ifeq ($(DRY_RUN),)
	@echo "$(VARIANT_$*): $(words $(OUTPUTS_$*)) artifacts up to date in $(ARTIFACTS)/$(VARIANT_$*)/ (what ran: $(ARTIFACTS)/$(VARIANT_$*)/build.log)"
else
	+@$(if $(findstring n,$(DRY_RUN)),$(info $(VARIANT_$*): make -n listed the stages that would start, if any; a stage after them runs only if a file it reads changes))
endif

# ---- input checks, at parse time, so a wrong WEIGHTS gets one clear line and nothing starts -----------
BUILD_GOALS := $(MODELS) reference generate
ifneq ($(filter $(BUILD_GOALS),$(MAKECMDGOALS)),)
  ifeq ($(filter $(MODEL),$(MODELS)),)
    $(error MODEL=$(MODEL): unknown model '$(MODEL)'; known models: $(MODELS))
  endif
  ifeq ($(WEIGHTS),)
    $(error WEIGHTS is not set: give WEIGHTS=tiny (small test model), WEIGHTS=random (full size, random) or WEIGHTS=/path/to/a/diffusers/folder)
  endif
  # make splits file names at spaces (no quoting helps): say so, rather than "no such folder".
  ifneq ($(words $(WEIGHTS)),1)
    $(error WEIGHTS="$(WEIGHTS)" has spaces, which make cannot handle in file names; link the folder to a path without them (ln -s "$(WEIGHTS)" /tmp/weights) and give WEIGHTS=/tmp/weights)
  endif
  ifeq ($(filter tiny random,$(WEIGHTS)),)
    ifeq ($(wildcard $(WEIGHTS)),)
      $(error WEIGHTS=$(WEIGHTS): no such folder; give a diffusers folder (as save_pretrained writes it), or WEIGHTS=tiny|random)
    endif
    # Another family's folder, an unreadable model_index.json or missing subfolders, as the stages would say it
    # (stages/lib/models.py check_weights_folder), one family at a time.
    $(foreach m,$(BUILD_MODELS),$(eval WEIGHTS_PROBLEM_$m := $$(shell python3 stages/check_weights.py --model $m --weights $(WEIGHTS) 2>&1)))
    $(foreach m,$(BUILD_MODELS),$(if $(WEIGHTS_PROBLEM_$m),$(error $(WEIGHTS_PROBLEM_$m))))
  endif
endif

# ---- setup: Debian packages, the Python venv, npm packages (idempotent) ------------------------------
APT_PACKAGES := emscripten chromium libvulkan1 mesa-vulkan-drivers
# lavapipe from bookworm-backports, unpacked here (not installed): a CPU Vulkan driver on which Dawn offers
# shader-f16, for the float16 libraries' WebGPU test (Debian 12's own lavapipe, whose libraries
# mesa-vulkan-drivers installs, is too old for Dawn). Without it that test is skipped, saying so.
LAVAPIPE := build/lavapipe/icd.json
setup: build/.apt.stamp .venv/.stamp node_modules/.stamp $(LAVAPIPE) ## install what the build and tests need

build/.apt.stamp: | build/
	$(Q)missing=$$(for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then echo "  APT $$missing"; apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; fi
	$(Q)touch $@

$(LAVAPIPE): tests/tools/fetch_lavapipe.sh | build/.apt.stamp
	$(call say,LAVAPIPE,$(@D))
	$(Q)tests/tools/fetch_lavapipe.sh $(@D) >/dev/null || \
	  echo "  warning: no lavapipe from bookworm-backports; the float16 WebGPU test will be skipped" >&2

.venv/.stamp: requirements.txt
	$(call say,VENV,.venv)
	$(Q)test -x .venv/bin/python || python3 -m venv .venv
	$(Q).venv/bin/pip install -q --disable-pip-version-check -r requirements.txt
	$(Q).venv/bin/pip install -q --disable-pip-version-check --no-deps open_clip_torch==3.3.0
	$(Q)touch $@

node_modules/.stamp: package.json package-lock.json
	$(call say,NPM,node_modules)
	$(Q)npm ci --no-audit --no-fund --loglevel=error
	$(Q)touch $@

SETUP := build/.apt.stamp .venv/.stamp node_modules/.stamp
%/:
	$(Q)mkdir -p $@

# ---- stages ---------------------------------------------------------------------------------------------
# Each rule below is one stage: stages/<stage>.py --variant-dir artifacts/<variant> [--submodule <library>].
# An output is the target of its stage's stamp with the empty recipe $(RESTAT): make then reads the output's
# time again. Marked + (run even under make -n), it keeps a dry run truthful: a stage that ran and left its
# output as it was is not taken for one that will change it, so `make -n` lists only the stages that would start.
RESTAT := +@
# `$(call missing,FILE)` adds FORCE when FILE is gone, so a deleted output is remade even if its stamp is not.
missing = $(if $(wildcard $1),,FORCE)
STAGE = $(PY) stages/$1.py --variant-dir $(ARTIFACTS)/$2
LIB := stages/lib/cli.py stages/lib/models.py stages/lib/relax_io.py
PIPELINE := stages/lib/pipeline.py stages/lib/targets.py stages/lib/schedules.py stages/lib/attention.py \
            $(wildcard stages/lib/passes/*.py)
A := $(ARTIFACTS)

# weights: WEIGHTS=tiny|random only; a real folder is read where it is.
define weights_rule
$(GENERATED_$1): stages/make_weights.py stages/lib/clip_vocab.py $(LIB) $(call missing,$(A)/$1/weights/model_index.json) | $(SETUP)
	$$(call say,WEIGHTS,$(A)/$1/weights)
	$$(Q)$$(call STAGE,make_weights,$1) --size $(WEIGHTS)
	$$(Q)touch $$@
$(SRC_$1)/%: $(GENERATED_$1) ; $$(RESTAT)
endef
$(foreach v,$(VARIANTS),$(if $(GENERATED_$v),$(eval $(call weights_rule,$v))))

# trace: reads only config.json, so new weights for the same architecture do not re-trace.
$(A)/%/traced.v1.json: $(A)/%/.trace.stamp ; $(RESTAT)
$(A)/%/.trace.stamp: $$(call config_of,$$*) stages/trace.py $$(wildcard stages/lib/submodules/*.py) $(LIB) \
		$$(call generated_of,$$*) $$(call missing,$$(@D)/traced.v1.json) | $(SETUP)
	$(call say,TRACE,$(@D))
	$(Q)$(call STAGE,trace,$(call variant_of,$*)) --submodule $(call library_of,$*) --weights $(call src_of,$*)
	$(Q)touch $@

# transform: target-independent Relax phases, per library; the float32 library's run also writes the
# build-time parameter transform (both libraries take the same stored weights).
$(A)/%/lowered.v1.json $(A)/%/transform_params.v1.json: $(A)/%/.transform.stamp ; $(RESTAT)
$(A)/%/.transform.stamp: $(A)/$$(call variant_of,$$*)/$$(call submodule_of,$$*)/traced.v1.json stages/transform.py \
		$(LIB) $(PIPELINE) $(A)/$$(call variant_of,$$*)/.option-winograd $$(call missing,$$(@D)/lowered.v1.json) \
		$$(if $$(call is_float16,$$*),,$$(call missing,$$(@D)/transform_params.v1.json))
	$(call say,TRANSFORM,$(@D))
	$(Q)$(call STAGE,transform,$(call variant_of,$*)) --submodule $(call library_of,$*) --winograd $(WINOGRAD)
	$(Q)touch $@

# tune: applies artifacts/tuning/<family>/<library>/ (MetaSchedule database); dlight for the rest.
tuning_dir = $(TUNING)/$(call family_of,$1)/$(call library_of,$1)
$(A)/%/scheduled.webgpu.v1.json: $(A)/%/.tune.stamp ; $(RESTAT)
$(A)/%/.tune.stamp: $(A)/%/lowered.v1.json $$(wildcard $$(call tuning_dir,$$*)/database_*.json) stages/tune.py \
		$(LIB) $(PIPELINE) $(A)/%/.option-tuning $$(call missing,$$(@D)/scheduled.webgpu.v1.json)
	$(call say,TUNE,$(@D))
	$(Q)$(call STAGE,tune,$(call variant_of,$*)) --submodule $(call library_of,$*) --tuning-dir $(call tuning_dir,$*)
	$(Q)touch $@

# export-lib: each library compiled on its own; WebGPU objects (wasm32 host) and a CPU library.
$(A)/%/lib.webgpu.v1.tar $(A)/%/subgroup-matrix.v1.json: $(A)/%/.export-webgpu.stamp ; $(RESTAT)
$(A)/%/.export-webgpu.stamp: $(A)/%/scheduled.webgpu.v1.json stages/export_lib.py $(LIB) $(PIPELINE) \
		$$(if $$(call is_float16,$$*),stages/lib/subgroup_matrix.py stages/lib/subgroup_matrix_attention.py) $$(call missing,$$(@D)/lib.webgpu.v1.tar) \
		$$(if $$(call is_float16,$$*),$$(call missing,$$(@D)/subgroup-matrix.v1.json))
	$(call say,EXPORT-LIB,$(@D) webgpu)
	$(Q)$(call STAGE,export_lib,$(call variant_of,$*)) --submodule $(call library_of,$*) --target webgpu
	$(Q)touch $@

$(A)/%/lib.cpu.v1.so: $(A)/%/.export-cpu.stamp ; $(RESTAT)
$(A)/%/.export-cpu.stamp: $(A)/%/lowered.v1.json stages/export_lib.py $(LIB) $(PIPELINE) \
		$$(call missing,$$(@D)/lib.cpu.v1.so)
	$(call say,EXPORT-LIB,$(@D) cpu)
	$(Q)$(call STAGE,export_lib,$(call variant_of,$*)) --submodule $(call library_of,$*) --target cpu
	$(Q)touch $@

# dump-params: the only stage that reads the weights themselves.
$(A)/%/params.v1/tensor-cache.json: $(A)/%/.params.stamp ; $(RESTAT)
$(A)/%/.params.stamp: $(A)/%/transform_params.v1.json $$(wildcard $$(dir $$(call config_of,$$*))*.safetensors) \
		$$(call generated_of,$$*) stages/dump_params.py stages/lib/tensor_cache.py $(LIB) \
		$(A)/$$(call variant_of,$$*)/.option-param-storage $$(call missing,$$(@D)/params.v1/tensor-cache.json)
	$(call say,DUMP-PARAMS,$(@D))
	$(Q)$(call STAGE,dump_params,$(call variant_of,$*)) --submodule $(call library_of,$*) --weights $(call src_of,$*) \
	  --storage-dtype $(PARAM_STORAGE)
	$(Q)touch $@

# Build options as files that change only when their value does, so switching one reruns the stage that reads
# it (and what depends on that) and nothing else. Whether the value changed is read when make parses this file,
# so an unchanged option is not even remade (it was FORCEd on every make).
OPTION_param-storage = $(PARAM_STORAGE)
OPTION_winograd      = $(WINOGRAD)
option_changed = $(shell test "$$(cat $1 2>/dev/null)" = '$2' || echo FORCE)
$(foreach v,$(VARIANTS),$(foreach o,param-storage winograd,$(eval \
  $(A)/$v/.option-$o: $(call option_changed,$(A)/$v/.option-$o,$(OPTION_$o)) ; \
	$$(Q)mkdir -p $$(@D) && echo '$(OPTION_$o)' > $$@)))
# A library's tuning log as an option: a checksum of its database files ("none" without them), so that its tune
# stage reruns when TUNING names another log or the log is removed, and no other library's does (a log
# changed in place is also a prerequisite of the stage, by its time).
tuning_log_id = $(if $(wildcard $(call tuning_dir,$1)/database_*.json),$(firstword $(shell cat \
                  $(sort $(wildcard $(call tuning_dir,$1)/database_*.json)) | cksum)),none)
$(foreach v,$(VARIANTS),$(foreach l,$(call libraries_of,$v),$(eval TUNING_ID_$v/$l := $(call tuning_log_id,$v/$l))$(eval \
  $(A)/$v/$l/.option-tuning: $(call option_changed,$(A)/$v/$l/.option-tuning,$(TUNING_ID_$v/$l)) ; \
	$$(Q)mkdir -p $$(@D) && echo '$(TUNING_ID_$v/$l)' > $$@)))

# dump-scheduler and dump-tokenizer: per variant, from the model's own config files.
$(A)/%/.scheduler.stamp: $$(call src_of,$$*)/scheduler/scheduler_config.json stages/dump_scheduler.py \
		stages/lib/schedulers.py $(LIB) $$(call generated_of,$$*) \
		$$(foreach f,$$(call scheduler_files,$$*),$$(call missing,$$(f))) | $(SETUP)
	$(call say,DUMP-SCHEDULER,$(A)/$*/scheduler.v1)
	$(Q)$(call STAGE,dump_scheduler,$*) --weights $(call src_of,$*)
	$(Q)touch $@
$(foreach v,$(VARIANTS),$(eval $(call scheduler_files,$v): $(A)/$v/.scheduler.stamp ; $$(RESTAT)))

$(A)/%/.tokenizer.stamp: $$(foreach t,$$(TOKENIZERS_$$(call family_of,$$*)),$$(call src_of,$$*)/$$t/tokenizer_config.json) \
		stages/dump_tokenizer.py stages/lib/clip_vocab.py $(LIB) $$(call generated_of,$$*) \
		$$(foreach f,$$(call tokenizer_files,$$*),$$(call missing,$$(f))) | $(SETUP)
	$(call say,DUMP-TOKENIZER,$(A)/$*/tokenizer.v1)
	$(Q)$(call STAGE,dump_tokenizer,$*) --weights $(call src_of,$*)
	$(Q)touch $@
$(foreach v,$(VARIANTS),$(eval $(call tokenizer_files,$v): $(A)/$v/.tokenizer.stamp ; $$(RESTAT)))

# build-runtime: TVM's C++ web runtime -> wasm objects, once per TVM version (stages/tvm_runtime/ holds the
# headers the wheel lacks).
RUNTIME_FILES := $(addprefix $(RUNTIME)/,wasm_runtime.o tvmjs_support.o webgpu_runtime.o)
# (The stamp sits beside the folder: build_runtime.py replaces the folder as a whole.)
$(RUNTIME_FILES): $(RUNTIME).stamp ; $(RESTAT)
$(RUNTIME).stamp: stages/build_runtime.py $(shell find stages/tvm_runtime -name '*.h') \
		$(foreach f,$(RUNTIME_FILES),$(call missing,$(f))) | $(SETUP)
	$(call say,BUILD-RUNTIME,$(RUNTIME))
	$(Q)$(PY) stages/build_runtime.py --out-dir $(RUNTIME)
	$(Q)touch $@

# link: every library's WebGPU objects + the runtime -> the one .wasm the page loads.
$(foreach v,$(VARIANTS),$(eval $(call wasm_file,$v): $(A)/$v/.link.stamp ; $$(RESTAT)))
$(A)/%/.link.stamp: $$(foreach l,$$(call libraries_of,$$*),$(A)/$$*/$$l/lib.webgpu.v1.tar) $(RUNTIME_FILES) \
		stages/export_lib.py stages/lib/wasm_link.py $(LIB) $$(call missing,$$(call wasm_file,$$*))
	$(call say,LINK,$(call wasm_file,$*))
	$(Q)$(call STAGE,export_lib,$*) --link --runtime-dir $(RUNTIME)
	$(Q)touch $@

# manifest: model.json, every file the runtimes load with its size and sha256.
# Behind a stamp like every stage: model.json keeps its mtime when its bytes do not change, so as a target of
# its own it stayed older than a rebuilt-but-identical input and reran on every make.
$(A)/%/model.json: $(A)/%/.manifest.stamp ; $(RESTAT)
$(A)/%/.manifest.stamp: $$(call manifested,$$*) stages/write_manifest.py $(LIB) \
		$$(call missing,$(A)/$$*/model.json)
	$(call say,MANIFEST,$(A)/$*/model.json)
	$(Q)$(call STAGE,write_manifest,$*)
	$(Q)touch $@

# ---- generation, reference and tests --------------------------------------------------------------------------------
PROMPT   ?= a photo of an astronaut riding a horse on the moon
NEGATIVE ?=
SEED     ?= 0
STEPS    ?= 20
SCHEDULER ?= $(DEFAULT_SCHEDULER_$(MODEL))
GUIDANCE ?= 7.5
OUT      ?= reference.png

reference: $(GENERATED_$(VARIANT_$(MODEL))) | $(SETUP) ## PyTorch/diffusers ground truth: MODEL= PROMPT= NEGATIVE= SEED= STEPS= SCHEDULER=pndm|dpm|euler GUIDANCE= OUT=
	$(Q)$(PY) stages/reference.py --model $(MODEL) --weights $(SRC_$(VARIANT_$(MODEL))) --prompt "$(PROMPT)" --negative "$(NEGATIVE)" \
	  --seed $(SEED) --steps $(STEPS) --scheduler $(SCHEDULER) --guidance $(GUIDANCE) --out $(OUT)

# Dawn finds a GPU through Vulkan; with none, SwiftShader (Chromium's CPU Vulkan) stands in.
SWIFTSHADER_ICD := /usr/lib/chromium/vk_swiftshader_icd.json
GPU_ENV := $(if $(wildcard /dev/nvidia0 /dev/dri/renderD*),,VK_ICD_FILENAMES=$(SWIFTSHADER_ICD))
generate: $(MODEL) ## WebGPU in Node (Dawn): same options as reference, OUT=file.png; SCHEDULER="pndm dpm" OUT=out-{scheduler}.png: one image each, one load
	$(Q)$(GPU_ENV) node web/node/generate.mjs --model $(ARTIFACTS)/$(VARIANT_$(MODEL))/model.json --prompt "$(PROMPT)" --negative "$(NEGATIVE)" \
	  --seed $(SEED) --steps $(STEPS) --scheduler "$(SCHEDULER)" --guidance $(GUIDANCE) --out "$(OUT)" --quiet

# ---- tests: one tiny build shared by every suite -----------------------------------------------------------
# TEST_ARTIFACTS holds the tiny SD 1.5 with WebGPU and CPU libraries and no tuning log (an empty TUNING of its
# own, so a log checked into artifacts/tuning/ does not change what the tests see). pytest, the node tests and
# the browser tests all use it; make brings it up to date, which costs nothing when nothing changed. Each suite
# records its tests' times in $(DURATIONS)/, and `make test` ends with the slowest of them.
TEST_ARTIFACTS ?= build/test-artifacts
TEST_MAKE = $(MAKE) --no-print-directory WEIGHTS=tiny ARTIFACTS=$(TEST_ARTIFACTS) TUNING=$(TEST_ARTIFACTS)-tuning \
             TARGETS="webgpu cpu"
DURATIONS := build/test-durations
# node:test prints its usual report and hands each test's time to tests/tools/durations_reporter.mjs; $2: how many
# test files run at once (default 1).
NODE_TEST = node --test --test-concurrency=$(or $2,1) --test-reporter=spec --test-reporter-destination=stdout \
            --test-reporter=./tests/tools/durations_reporter.mjs --test-reporter-destination=$(DURATIONS)/$1.jsonl
.PHONY: test-build test-python test-node test-browser

# The suites run one after another: SwiftShader (in the node processes of test_webgpu.py and the node suite, and
# in Chromium) slows down more than proportionally when it shares the two cores, so running the suites side by side
# took longer in all (21.1 and 27.6 min against 21.6 one after another, measured here).
test: | $(SETUP) $(LAVAPIPE) ## run every test suite on one shared tiny build, then list the slowest tests
	$(Q)rm -rf $(DURATIONS)
	$(Q)$(MAKE) --no-print-directory test-build
	$(Q)status=0; \
	$(MAKE) --no-print-directory test-python || status=1; \
	$(MAKE) --no-print-directory test-node || status=1; \
	$(MAKE) --no-print-directory test-browser || status=1; \
	python3 tests/tools/slowest.py $(DURATIONS); \
	exit $$status

test-build: | $(SETUP) ## every family's tiny model, which the tests share: TEST_ARTIFACTS=build/test-artifacts, TARGETS="webgpu cpu"
	$(Q)mkdir -p $(TEST_ARTIFACTS)-tuning
	$(Q)+$(TEST_MAKE) $(MODELS)

# CPU parity, incremental builds, build errors, tuning, WebGPU on SwiftShader and lavapipe. Two workers, each
# taking whole files (their module fixtures are built once), keep both cores busy: 9.8 min here, 11.8 on one.
PYTEST_WORKERS ?= 2
test-python: test-build | $(LAVAPIPE)
	$(Q)mkdir -p $(DURATIONS)
	$(Q)WEBSD_TEST_ARTIFACTS=$(TEST_ARTIFACTS) WEBSD_TEST_DURATIONS=$(DURATIONS)/pytest.jsonl \
	  $(PY) -m pytest tests/python -q -p no:cacheprovider -n $(PYTEST_WORKERS) --dist loadfile

# tests/node/ on Dawn: runtime.test.mjs needs its compiled fixture (remade only when its sources change; it
# links the test build's runtime); schedulers.test.mjs needs a golden file, and tests/python/test_schedulers.py
# already runs it with one.
RUNTIME_FIXTURE := build/test-fixtures/runtime
NODE_TESTS := $(filter-out tests/node/schedulers.test.mjs,$(wildcard tests/node/*.test.mjs))
$(RUNTIME_FIXTURE)/manifest.json: tests/node/fixtures/make_runtime_fixture.py stages/lib/targets.py \
		stages/lib/wasm_link.py $(RUNTIME_FILES) | $(SETUP)
	$(call say,FIXTURE,$(RUNTIME_FIXTURE))
	$(Q)$(PY) tests/node/fixtures/make_runtime_fixture.py --out-dir $(RUNTIME_FIXTURE) --runtime-dir $(RUNTIME) >/dev/null

test-node: test-build | $(SETUP)
	$(Q)+$(TEST_MAKE) $(RUNTIME_FIXTURE)/manifest.json
	$(Q)mkdir -p $(DURATIONS)
	$(Q)$(GPU_ENV) RUNTIME_FIXTURE=$(RUNTIME_FIXTURE) $(call NODE_TEST,node) $(NODE_TESTS)

clean: ## remove generated artifacts (keeps artifacts/tuning/, the venv and node_modules)
	rm -rf $(filter-out $(ARTIFACTS)/tuning,$(wildcard $(ARTIFACTS)/*)) build

FORCE:

# ---- tuning: one round = propose (compile candidates) -> measure (on a GPU, through Dawn) -> record ----------
# make tune MODEL=sd15 SUBMODULE=unet TRIALS=16 tunes against the full-size shapes of $(MODEL)-random (build it
# first: make sd15 WEIGHTS=random); run it again to continue where the log stops. The log is
# $(TUNING)/<model>/<submodule>/, which the tune stage applies, so the next `make sd15` rebuilds that submodule
# only. With the GPU on another machine: tune-propose here, `node stages/tune_measure.mjs --work-dir
# $(TUNE_WORK)` there (with the work dir copied), tune-record here with its measured.json back.
SUBMODULE    ?= unet
TRIALS       ?= 16
TUNE_VARIANT ?= $(MODEL)-random
TUNE_FLAGS   ?=
TUNE_MEASURE_FLAGS ?=
TUNE_WORK    ?= build/tune/$(MODEL)/$(SUBMODULE)
TUNE_SEARCH   = $(PY) stages/tune_search.py --variant-dir $(ARTIFACTS)/$(TUNE_VARIANT) --submodule $(SUBMODULE) \
                  $1 --tuning-dir $(TUNING)/$(MODEL)/$(SUBMODULE) --work-dir $(TUNE_WORK) $(TUNE_FLAGS)
.PHONY: tune tune-propose tune-measure tune-record
tune: ## tune kernels on this machine's GPU: MODEL=sd15 SUBMODULE=unet TRIALS=16 (one round; rerun to continue)
	$(Q)$(MAKE) --no-print-directory tune-propose
	$(Q)$(MAKE) --no-print-directory tune-measure
	$(Q)$(MAKE) --no-print-directory tune-record

tune-propose: $(RUNTIME_FILES) | $(SETUP)
	$(call say,TUNE-PROPOSE,$(TUNE_WORK))
	$(Q)$(call TUNE_SEARCH,propose) --trials $(TRIALS) --runtime-dir $(RUNTIME)

tune-measure: | $(SETUP)
	$(call say,TUNE-MEASURE,$(TUNE_WORK))
	$(Q)$(GPU_ENV) node stages/tune_measure.mjs --work-dir $(TUNE_WORK) $(TUNE_MEASURE_FLAGS)

tune-record: | $(SETUP)
	$(call say,TUNE-RECORD,$(TUNING)/$(MODEL)/$(SUBMODULE))
	$(Q)$(call TUNE_SEARCH,record)

# ---- the web site: assemble, serve, demo, browser tests ---------------------------------------------------
# deploy/assemble_site.py copies (never builds): web/app + web/runtime + npm bundles + every built variant the
# config names -> $(SITE)/. A deployment (make deploy-ghpages, later) only copies $(SITE)/ somewhere.
SITE        ?= build/site
SITE_CONFIG ?= web/local-config.json
SITE_MODELS ?=
PORT        ?= 8888
TEST_SITE   := build/test-site
.PHONY: site serve demo test-browser deploy-ghpages

site: $(SITE).stamp ## assemble the static site in SITE=build/site from built variants (SITE_CONFIG=web/gh-page-config.json for GitHub Pages)

# Redone when a page or runtime file, the config, the options or a built variant change: the variants' model.json
# files name every file by sha256, so their digest stands for the models (as a value, not as prerequisites, which
# would make `make site` rebuild models). The stamp and options live beside the folder, which each assembly
# replaces whole.
SITE_SOURCES := $(shell find web/app web/runtime -type f) deploy/assemble_site.py
SITE_OPTIONS  = $(SITE_CONFIG) $(ARTIFACTS) $(SITE_MODELS) \
                $(shell cat $(sort $(wildcard $(ARTIFACTS)/*/model.json)) /dev/null | sha256sum | cut -c1-16)
$(SITE).stamp: $(SITE_SOURCES) $(SITE_CONFIG) $(SITE).options node_modules/.stamp
	$(call say,SITE,$(SITE))
	$(Q)python3 deploy/assemble_site.py --config $(SITE_CONFIG) --out $(SITE) --artifacts $(ARTIFACTS) --models "$(SITE_MODELS)"
	$(Q)touch $@
$(SITE).options: $(call option_changed,$(SITE).options,$(SITE_OPTIONS))
	$(Q)mkdir -p $(@D) && echo '$(SITE_OPTIONS)' > $@

# The published site: deploy/ghpages.py assembles it (build/ghpages-site, web/gh-page-config.json), commits it onto
# the gh-pages branch of GHPAGES_REMOTE (default: origin) and pushes; with PARAMS_BASE_URL the model files go to
# PARAMS_OUT for upload there. MODELS: the config's model ids to publish (default: every built one).
GHPAGES_REMOTE  ?=
PARAMS_BASE_URL ?=
PARAMS_OUT      ?= build/params-upload
deploy-ghpages: | node_modules/.stamp ## publish to GitHub Pages: GHPAGES_REMOTE=<git url or path> [MODELS="sd15 sdxl"] [PARAMS_BASE_URL=https://... PARAMS_OUT=dir]
	$(Q)python3 deploy/ghpages.py --remote "$(GHPAGES_REMOTE)" --artifacts $(ARTIFACTS) --params-out "$(PARAMS_OUT)" \
	  --params-base-url "$(PARAMS_BASE_URL)" --models "$(if $(filter command line,$(origin MODELS)),$(MODELS))"

serve: ## serve SITE on http://127.0.0.1:PORT/ (PORT=8888 by default; 127.0.0.1 only)
	$(Q)python3 deploy/serve.py --dir $(SITE) --port $(PORT)

demo: ## build the tiny SD 1.5, assemble the site with web/local-config.json, serve it
	$(Q)$(MAKE) --no-print-directory sd15 WEIGHTS=tiny
	$(Q)$(MAKE) --no-print-directory site SITE_CONFIG=web/local-config.json
	$(Q)$(MAKE) --no-print-directory serve

# Headless Chromium (SwiftShader) on a site holding the tiny models of the test build; screenshots go to
# test-results/browser/. Two test files at once: a page compiles its kernels lazily, on one core, so one file alone
# leaves the other core mostly idle (7.0 min against 8.1 one at a time, measured here on 2026-12-01).
test-browser: test-build | $(SETUP)
	$(Q)python3 deploy/assemble_site.py --config web/local-config.json --out $(TEST_SITE) \
	  --artifacts $(TEST_ARTIFACTS) --models "$(addsuffix -tiny,$(MODELS))" >/dev/null
	$(Q)mkdir -p $(DURATIONS)
	$(Q)TEST_SITE=$(TEST_SITE) TEST_ARTIFACTS=$(TEST_ARTIFACTS) $(call NODE_TEST,browser,2) tests/browser/*.test.mjs
